package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// readyFileEnv names the file `up` writes once everything is healthy; start
// sets it for the `up` it runs in the background.
const readyFileEnv = "PORTCULLIS_READY_FILE"

// start runs `platform up` detached, with its output in <runDir>/platform.log,
// and returns once it reports ready, or fails with the log's tail if it exits.
func start(runDir string) error {
	if pid, err := readPid(runDir); err == nil && alive(pid) {
		return fmt.Errorf("already running (pid %d); run stop first", pid)
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(runDir, "platform.log")
	readyPath := filepath.Join(runDir, "ready")
	_ = os.Remove(readyPath)
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "up")
	cmd.Env = append(os.Environ(), readyFileEnv+"="+readyPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // survives the task that started it
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start platform: %w", err)
	}
	if err := os.WriteFile(pidPath(runDir), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.After(90 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("platform exited before it was ready (%v); last lines of %s:\n%s", err, logPath, tail(logPath, 30))
		case <-deadline:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("platform not ready after 90s; last lines of %s:\n%s", logPath, tail(logPath, 30))
		case <-time.After(200 * time.Millisecond):
		}
		if url, err := os.ReadFile(readyPath); err == nil {
			fmt.Printf("Portcullis is running in the background: gateway %s, logs in %s; stop it with `go tool task stop`.\n", strings.TrimSpace(string(url)), logPath)
			return nil
		}
	}
}

// stop signals the background platform and waits until it has exited.
func stop(runDir string) error {
	pid, err := readPid(runDir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Println("not running")
		return nil
	}
	if err != nil {
		return err
	}
	defer os.Remove(pidPath(runDir))
	if !alive(pid) {
		fmt.Println("not running")
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if !alive(pid) {
			fmt.Println("stopped")
			return nil
		}
	}
	// The platform's session holds every child: kill them all.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return fmt.Errorf("platform (pid %d) did not stop in 45s and was killed", pid)
}

func pidPath(runDir string) string { return filepath.Join(runDir, "platform.pid") }

func readPid(runDir string) (int, error) {
	b, err := os.ReadFile(pidPath(runDir))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err != nil || !strings.Contains(string(stat), ") Z ")
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
