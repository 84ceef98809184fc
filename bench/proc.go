package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; it is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// child is a process the harness started. Its stdout is scanned for lines;
// stdout and stderr are also copied to a log file.
type child struct {
	name string
	cmd  *exec.Cmd
	log  *os.File

	mu    sync.Mutex
	lines []string
	cond  chan struct{} // closed and replaced on every new line
	done  chan struct{} // closed when the process exited
	err   error         // Wait's error
}

// startChild starts bin with args; its output goes to logDir/<name>.log.
func startChild(logDir, name string, env []string, bin string, args ...string) (*child, error) {
	f, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "$ %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: f, cond: make(chan struct{}), done: make(chan struct{})}
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(f, line)
			c.mu.Lock()
			if len(c.lines) < 64 {
				c.lines = append(c.lines, line)
			}
			close(c.cond)
			c.cond = make(chan struct{})
			c.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() {
		<-scanDone
		err := cmd.Wait()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// waitLine waits for a stdout line starting with prefix and returns it.
func (c *child) waitLine(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	seen := 0
	for {
		c.mu.Lock()
		for ; seen < len(c.lines); seen++ {
			if strings.HasPrefix(c.lines[seen], prefix) {
				l := c.lines[seen]
				c.mu.Unlock()
				return l, nil
			}
		}
		cond := c.cond
		c.mu.Unlock()
		select {
		case <-cond:
		case <-c.done:
			return "", fmt.Errorf("%s exited before printing %q: %v (see %s)", c.name, prefix, c.exitErr(), c.log.Name())
		case <-t.C:
			return "", fmt.Errorf("%s printed no %q line within %s (see %s)", c.name, prefix, timeout, c.log.Name())
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func (c *child) exitErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then kills the process group.
func (c *child) stop(grace time.Duration) {
	if c == nil {
		return
	}
	if !c.exited() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(grace):
			_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
			<-c.done
		}
	}
	c.log.Close()
}

// usage is a snapshot of a process's CPU time and peak RSS.
type usage struct {
	CPUSeconds float64
	HWMBytes   int64
	RSSBytes   int64
}

// readUsage reads /proc/<pid>/stat (utime+stime) and /proc/<pid>/status
// (VmHWM, VmRSS).
func readUsage(pid int) (usage, error) {
	var u usage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	cpu, err := parseStatCPU(b)
	if err != nil {
		return u, err
	}
	u.CPUSeconds = cpu
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	u.HWMBytes = parseStatusKB(st, "VmHWM:") * 1024
	u.RSSBytes = parseStatusKB(st, "VmRSS:") * 1024
	return u, nil
}

// parseStatCPU returns utime+stime in seconds from a /proc/<pid>/stat line.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted after the last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state(3) ppid(4) ... utime is field 14, stime 15 → index 11, 12.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTicks, nil
}

// parseStatusKB returns the kB value of key in a /proc/<pid>/status file, 0
// when absent.
func parseStatusKB(b []byte, key string) int64 {
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// loadAvg returns the 1-minute load average.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// countFDs returns the number of open file descriptors and of threads of pid
// (0 when unreadable).
func countFDs(pid int) (fds, threads int) {
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		fds = len(ents)
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		threads = int(parseStatusKB(st, "Threads:"))
	}
	return fds, threads
}
