// Package bpmn parses BPMN 2.0 XML as 5Minds Studio writes it (bpmn and
// camunda namespaces, collaboration/participant/lane wrappers) into the
// executable model the engine emulator runs, and validates it: every error is
// an *ElementError naming the element id and the reason.
//
// It must not import the emulator, goja or any network package.
package bpmn
