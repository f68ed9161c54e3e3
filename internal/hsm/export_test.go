package hsm

import "crypto/ed25519"

var ParseECPoint = parseECPoint

func KeyHash(name string, pub ed25519.PublicKey) uint32 {
	return keyHash(name, append([]byte{algEd25519}, pub...))
}
