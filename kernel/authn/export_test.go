package authn

// Test hooks: how many signatures a verifier checked, to show that cached
// tokens are not checked again.

func (v *Verifier) SignatureChecks() int64 { return v.signatureChecks.Load() }

func (v *ServiceVerifier) SignatureChecks() int64 { return v.signatureChecks.Load() }

func (v *Verifier) CachedTokens() int { return v.tokens.len() }
