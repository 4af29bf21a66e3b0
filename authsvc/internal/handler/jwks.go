package handler

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"portcullis.dev/authsvc/internal/keys"
	"portcullis.dev/kernel/logging"
)

// JWKSPath is where the JWK Set is served.
const JWKSPath = "/.well-known/jwks.json"

// cacheControl lets verifiers and the gateway cache the set for a minute.
// A rotation is not delayed by it: the kernel verifier fetches again on an
// unknown kid, and a retired key stays published far longer than this.
const cacheControl = "public, max-age=60"

// JWKSHandler serves the JWK Set (RFC 7517 section 5) as JSON.
type JWKSHandler struct {
	keyring *keys.Keyring
	logger  *slog.Logger
}

// NewJWKSHandler returns the handler for keyring's published keys; a nil
// logger discards.
func NewJWKSHandler(keyring *keys.Keyring, logger *slog.Logger) *JWKSHandler {
	return &JWKSHandler{keyring: keyring, logger: logging.OrDiscard(logger)}
}

// ServeHTTP answers GET and HEAD with the set.
func (h *JWKSHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	set, err := h.keyring.JWKS(r.Context())
	if err != nil {
		h.logger.LogAttrs(r.Context(), slog.LevelError, "JWKS unavailable", slog.String("error", err.Error()))
		http.Error(w, "signing keys unavailable", http.StatusServiceUnavailable)
		return
	}
	body, err := json.Marshal(struct {
		Keys []keys.JWK `json:"keys"`
	}{set})
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", cacheControl)
	_, _ = w.Write(body)
}
