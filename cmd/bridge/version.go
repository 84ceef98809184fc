package main

import (
	"regexp"
	"strings"
)

// semverRE is the SemVer 2.0.0 grammar (the one the NATS micro service checks).
var semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// semverOf derives the micro service's version (SemVer required) from any
// build version string. The rule (cmd/bridge/README.md, "Versions"):
//
//   - a SemVer, with or without a leading "v", is kept without the "v"
//     ("v1.2.3" → "1.2.3"; git describe's "v1.2.3-4-gabc1234-dirty" is one);
//   - anything else becomes the pre-release "0.0.0-dev" with the string as
//     build metadata, its characters outside [0-9A-Za-z-.] turned into "-"
//     ("f06b7d5" → "0.0.0-dev+f06b7d5", "dev" or "devel" → "0.0.0-dev").
func semverOf(v string) string {
	v = strings.TrimSpace(v)
	if s := strings.TrimPrefix(v, "v"); semverRE.MatchString(s) {
		return s
	}
	if v == "" || v == "dev" || v == "devel" {
		return "0.0.0-dev"
	}
	var ids []string
	for id := range strings.SplitSeq(v, ".") {
		id = strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' {
				return r
			}
			return '-'
		}, id)
		if id != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return "0.0.0-dev"
	}
	return "0.0.0-dev+" + strings.Join(ids, ".")
}

// serviceVersion is the micro service version: semverOf the build version.
func serviceVersion() string { return semverOf(buildVersion()) }
