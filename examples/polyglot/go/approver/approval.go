package main

import "encoding/json"

// Decide applies the seed's approval rules to the token a user task was
// entered with: amounts under 1,000 are approved automatically, VIP customers
// are approved with high priority, everything else needs a manual review.
// The token may carry the values at its top level or under "current".
func Decide(token json.RawMessage) map[string]any {
	var t struct {
		Amount       *float64 `json:"amount"`
		CustomerType string   `json:"customerType"`
		Current      *struct {
			Amount       *float64 `json:"amount"`
			CustomerType string   `json:"customerType"`
		} `json:"current"`
	}
	_ = json.Unmarshal(token, &t) // a token that is no object has no amount: review
	amount, customerType := t.Amount, t.CustomerType
	if amount == nil && t.Current != nil {
		amount, customerType = t.Current.Amount, t.Current.CustomerType
	}
	switch {
	case amount != nil && *amount < 1000:
		return map[string]any{"approved": true, "autoApproved": true, "reason": "amount below threshold"}
	case customerType == "vip":
		return map[string]any{"approved": true, "priority": "high", "reason": "VIP customer"}
	default:
		return map[string]any{"approved": false, "requiresReview": true, "reason": "manual review required"}
	}
}
