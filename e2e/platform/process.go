package platform

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// process is one child of the platform: a binary with its own name, whose
// output lines are copied to the shared log with a prefix.
type process struct {
	name string
	cmd  *exec.Cmd
	// stopSignal asks the process to stop gracefully: SIGTERM for our
	// binaries, SIGINT for Consul, which leaves the cluster on it and exits
	// 0 (on SIGTERM a dev server exits 1).
	stopSignal syscall.Signal
	// anyExitAfterStop accepts every exit status once stopSignal was sent:
	// Consul exits 1 after a clean shutdown.
	anyExitAfterStop bool
	// quietAfterStop keeps what the process prints once asked to stop
	// out of the log (its tail still has it): Consul's dev agent says a
	// screenful of warnings about its own shutdown.
	quietAfterStop atomic.Bool
	stopping       atomic.Bool
	killed         atomic.Bool
	done           chan struct{} // closed when the process has exited
	err            error         // valid after done is closed

	mu   sync.Mutex
	tail []string // the last lines it printed, shown when it fails
}

const tailLines = 20

// startProcess starts path with args and env, copying its output to log as
// lines prefixed with name.
func startProcess(name, path string, args, env []string, stopSignal syscall.Signal, log *prefixLog) (*process, error) {
	p := &process{name: name, done: make(chan struct{}), stopSignal: stopSignal}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	// Its own process group, so a Ctrl-C in the terminal reaches the
	// platform first and the platform stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	p.cmd = cmd
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			p.remember(line)
			if !p.quietAfterStop.Load() || !p.stopping.Load() {
				log.printf(name, "%s", line)
			}
		}
		_, _ = io.Copy(io.Discard, pr) // a line too long for the scanner must not block the child
	}()
	go func() {
		p.err = cmd.Wait()
		_ = pw.Close()
		<-copied
		close(p.done)
	}()
	return p, nil
}

func (p *process) remember(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tail = append(p.tail, line)
	if len(p.tail) > tailLines {
		p.tail = p.tail[len(p.tail)-tailLines:]
	}
}

// lastLines returns the last lines the process printed.
func (p *process) lastLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tail...)
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends the stop signal and waits for the process to exit; if ctx ends first it
// kills the process group.
func (p *process) stop(ctx context.Context) error {
	if p.exited() {
		return p.exitErr()
	}
	p.stopping.Store(true)
	_ = p.cmd.Process.Signal(p.stopSignal)
	select {
	case <-p.done:
		return p.exitErr()
	case <-ctx.Done():
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop in time and was killed", p.name)
	}
}

// kill ends the process group with SIGKILL, as a crash would, and waits
// for it to exit.
func (p *process) kill(ctx context.Context) error {
	if p.exited() {
		return nil
	}
	p.killed.Store(true)
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s did not die: %w", p.name, ctx.Err())
	}
}

// exitErr reports a failed exit. Our binaries must exit 0 on their stop
// signal — a process that dies of it has not drained or deregistered — and
// only Consul, which exits 1 after a clean shutdown, or a process killed on
// purpose, is let off.
func (p *process) exitErr() error {
	var exit *exec.ExitError
	if errors.As(p.err, &exit) && (p.killed.Load() || p.anyExitAfterStop && p.stopping.Load()) {
		return nil
	}
	if p.err != nil {
		return fmt.Errorf("%s: %w", p.name, p.err)
	}
	return nil
}

// waitTimeout is how long a process gets to stop before it is killed.
const waitTimeout = 20 * time.Second
