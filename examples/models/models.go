// Package models embeds the sample BPMN models that `bridge dev` deploys into
// the engine emulator and that the tests use. See README.md for what each
// model exercises.
package models

import "embed"

// FS holds every *.bpmn file of this directory.
//
//go:embed *.bpmn
var FS embed.FS
