package main

import (
	"testing"

	"portcullis.dev/kernel/service/servicetest"
)

func TestLifecycle(t *testing.T) { servicetest.CheckLifecycle(t, name, run) }

func TestPrintConfigRedactsSecrets(t *testing.T) { servicetest.CheckPrintConfig(t, run) }

func TestRefusesToStartWithoutServiceKey(t *testing.T) { servicetest.CheckMissingKey(t, run) }
