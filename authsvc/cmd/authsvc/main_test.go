package main

import (
	"crypto/rand"
	"encoding/base64"
	"testing"

	"portcullis.dev/kernel/service/servicetest"
)

// setKEK gives the service a key-encryption key through the environment,
// as `up` does (servicetest sets the database and the service key).
func setKEK(t *testing.T) {
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	t.Setenv("PORTCULLIS_KEYS_KEK", base64.StdEncoding.EncodeToString(kek))
}

func TestLifecycle(t *testing.T) {
	setKEK(t)
	servicetest.CheckLifecycle(t, name, run)
}

func TestPrintConfigRedactsSecrets(t *testing.T) {
	setKEK(t)
	servicetest.CheckPrintConfig(t, run)
}

func TestRefusesToStartWithoutServiceKey(t *testing.T) { servicetest.CheckMissingKey(t, run) }
