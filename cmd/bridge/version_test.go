package main

import "testing"

func TestSemverOf(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                   "1.2.3",
		"1.2.3":                    "1.2.3",
		"v1.2.3-rc.1+build.5":      "1.2.3-rc.1+build.5",
		"v1.2.3-4-gabc1234-dirty":  "1.2.3-4-gabc1234-dirty",
		"v0.0.0-test":              "0.0.0-test",
		"dev":                      "0.0.0-dev",
		"devel":                    "0.0.0-dev",
		"":                         "0.0.0-dev",
		"f06b7d5":                  "0.0.0-dev+f06b7d5",
		"0123456":                  "0.0.0-dev+0123456",
		"f06b7d5-dirty":            "0.0.0-dev+f06b7d5-dirty",
		"v1.2":                     "0.0.0-dev+v1.2",
		"release/2026_12 (beta)!":  "0.0.0-dev+release-2026-12--beta--",
		"v1.02.3":                  "0.0.0-dev+v1.02.3",
		"..":                       "0.0.0-dev",
		"v0.0.0-20260101-abcdef12": "0.0.0-20260101-abcdef12",
	} {
		got := semverOf(in)
		if got != want {
			t.Errorf("semverOf(%q) = %q, want %q", in, got, want)
		}
		if !semverRE.MatchString(got) {
			t.Errorf("semverOf(%q) = %q is not SemVer", in, got)
		}
	}
}

func FuzzSemverOf(f *testing.F) {
	for _, s := range []string{"v1.2.3", "dev", "f06b7d5", "1.2.3-..", "+", "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got := semverOf(s); !semverRE.MatchString(got) {
			t.Fatalf("semverOf(%q) = %q is not SemVer", s, got)
		}
	})
}
