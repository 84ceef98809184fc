package main

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDevDemoRoundTrip(t *testing.T) {
	p := startBridge(t, nil, "dev", "--demo", "--nats-listen", "127.0.0.1:0", "--engine-addr", "127.0.0.1:0")
	p.waitLine("NATS:   nats://127.0.0.1:", 20*time.Second)
	p.waitLine("engine: http://127.0.0.1:", time.Second)
	p.waitLine("try it:", time.Second)
	// Some instance's whole round trip. Events are hints (one may be missed
	// between two long polls), so any instance with every step will do.
	roundTrip, ok := p.waitFor(func(lines []string) (string, bool) {
		steps := map[string]map[string]bool{} // instance -> steps seen
		taskInstance := map[string]string{}   // task id -> instance
		for _, l := range lines {
			if strings.HasPrefix(l, "demo: task published on pe.task.SampleExternalTask:") {
				taskInstance[field(l, "id=")] = field(l, "instance=")
			}
		}
		for _, l := range lines {
			var inst, step string
			switch {
			case strings.HasPrefix(l, "demo: task published"):
				inst, step = field(l, "instance="), "published"
			case strings.HasPrefix(l, "demo: task handled:") && strings.Contains(l, "Hello from the pe-bridge demo handler"):
				inst, step = taskInstance[field(l, "id=")], "handled"
			case strings.HasPrefix(l, "demo: task finished:"):
				inst, step = field(l, "instance="), "finished"
			case strings.HasPrefix(l, "demo: process ended:") && strings.Contains(l, "Hello from the pe-bridge demo handler"):
				inst, step = field(l, "instance="), "ended"
			default:
				continue
			}
			if inst == "" {
				continue
			}
			if steps[inst] == nil {
				steps[inst] = map[string]bool{}
			}
			steps[inst][step] = true
			if len(steps[inst]) == 4 {
				return inst, true
			}
		}
		return "", false
	}, 30*time.Second)
	if !ok {
		t.Fatal("no instance showed every step of the round trip (published, handled, finished, ended)")
	}
	t.Logf("round trip of instance %s seen", roundTrip)
	p.waitLine("demo: started hello_world instance=", 5*time.Second)
	p.signal(syscall.SIGINT)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT, want 0", code)
	}
	sum := p.waitLine("bridge summary:", time.Second)
	if strings.Contains(sum, "finished=0 ") {
		t.Errorf("summary counts no finished task: %q", sum)
	}
}

func field(line, key string) string {
	i := strings.Index(line, key)
	if i < 0 {
		return ""
	}
	v := line[i+len(key):]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v
}
