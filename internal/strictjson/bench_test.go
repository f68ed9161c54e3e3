package strictjson

import "testing"

// request is a typical 200-byte action request.
var request = []byte(`{"action":{"type":"transfer","amount":20000,"to":"acct-9","currency":"USD","memo":"Invoice 1234 \u2014 Acme"},` +
	`"instruction":"Pay invoice 1234 from Acme","reasoning":"The invoice is due today","rate":99.99,"ok":true}`)

func BenchmarkDecode(b *testing.B) {
	b.SetBytes(int64(len(request)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(request, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCanonical(b *testing.B) {
	v, err := Decode(request, Limits{})
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		if buf, err = AppendCanonical(buf[:0], v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCanonical is what every decision pays: decode, then canonicalise.
func BenchmarkDecodeCanonical(b *testing.B) {
	b.SetBytes(int64(len(request)))
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		v, err := Decode(request, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if buf, err = AppendCanonical(buf[:0], v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeNumbers(b *testing.B) {
	in := []byte(`[0.1,99.99,20000,1e5,-0.5,123456.789,1e-7,1.7976931348623157e308]`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(in, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
