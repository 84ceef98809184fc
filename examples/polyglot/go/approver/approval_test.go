package main

import (
	"encoding/json"
	"testing"
)

func TestDecide(t *testing.T) {
	cases := map[string]string{
		`{"amount":999.99}`:                                  `{"approved":true,"autoApproved":true,"reason":"amount below threshold"}`,
		`{"amount":5000,"customerType":"vip"}`:               `{"approved":true,"priority":"high","reason":"VIP customer"}`,
		`{"current":{"amount":1000,"customerType":"vip"}}`:   `{"approved":true,"priority":"high","reason":"VIP customer"}`,
		`{"amount":1000,"customerType":"regular"}`:           `{"approved":false,"reason":"manual review required","requiresReview":true}`,
		`{"customerType":"regular"}`:                         `{"approved":false,"reason":"manual review required","requiresReview":true}`,
		`null`:                                               `{"approved":false,"reason":"manual review required","requiresReview":true}`,
		`{"current":{"amount":10},"customerType":"ignored"}`: `{"approved":true,"autoApproved":true,"reason":"amount below threshold"}`,
	}
	for in, want := range cases {
		b, _ := json.Marshal(Decide(json.RawMessage(in)))
		if string(b) != want {
			t.Errorf("Decide(%s) = %s, want %s", in, b, want)
		}
	}
}
