package main

import (
	"io/fs"

	"github.com/pe-bridge/pe-bridge/examples/models"
)

// sampleModels returns the embedded sample models (examples/models).
func sampleModels() (fs.FS, error) { return models.FS, nil }
