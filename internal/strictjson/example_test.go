package strictjson_test

import (
	"fmt"

	"github.com/rulelock/rulelock/internal/strictjson"
)

func Example() {
	req := []byte(`{ "to": "acct-9", "amount": 20000.0, "type": "transfer", "memo": "\u20ac 5" }`)
	v, err := strictjson.Decode(req, strictjson.Limits{})
	if err != nil {
		panic(err)
	}
	canon, err := strictjson.Canonical(v)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\n", canon)
	// Output: {"amount":20000,"memo":"€ 5","to":"acct-9","type":"transfer"}
}

func ExampleDecode_errors() {
	for _, in := range []string{
		`{"amount": 1, "Amount": 20000}`,
		`{"amount": 9007199254740993}`,
		"{\"to\": \"acct-9\",\n \"amount\": 1,}",
		`{"a": 1} {"a": 2}`,
	} {
		_, err := strictjson.Decode([]byte(in), strictjson.Limits{})
		fmt.Printf("%s: %v\n", err.(*strictjson.Error).Code, err)
	}
	// Output:
	// duplicate_key: 1:15: key "Amount" differs only in case from earlier key "amount"
	// lossy_number: 1:12: number 9007199254740993 cannot be represented exactly as a 64-bit float
	// syntax: 2:14: invalid character '}' looking for an object key
	// trailing_data: 1:10: data after JSON value: '{'
}
