module github.com/pe-bridge/pe-bridge/events

go 1.26.0
