package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// readyFileEnv names the file `up` writes its welcome to once everything is
// healthy; start sets it for the `up` it runs in the background, waits for
// the file and prints it, so both commands greet the user the same way.
const readyFileEnv = "PORTCULLIS_READY_FILE"

// writeReadyFile writes the welcome to path in one step (a temporary file
// renamed into place), so start never reads half of it. It may hold a
// newly generated admin password: only the user may read it.
func writeReadyFile(path, welcome string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(welcome), 0o600); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	return nil
}

// start runs `platform up` detached, with its output in <runDir>/platform.log,
// and returns once it reports ready, or fails with the log's tail if it exits.
// The last run's log is kept as platform.log.1: it says why that run ended.
func start(runDir string) error {
	if pid, err := readPid(runDir); err == nil {
		if isPlatform(pid) {
			return fmt.Errorf("already running (pid %d); run stop first", pid)
		}
		// A platform that ended abruptly may have left its processes, in
		// its session: overwriting its pid file would lose them to stop.
		if !alive(pid) {
			if left, err := sessionProcesses(pid); err == nil && len(left) > 0 {
				return fmt.Errorf("a platform (pid %d) that ended abruptly left processes %v running; `go tool task stop` stops them", pid, left)
			}
		}
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return fmt.Errorf("create run directory: %w", err)
	}
	logPath := filepath.Join(runDir, "platform.log")
	readyPath := readyPath(runDir)
	_ = os.Remove(readyPath)
	if err := os.Rename(logPath, logPath+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keep the last log: %w", err)
	}
	// The log holds no secret (the welcome in it leaves a new password
	// out), but what the services log is the user's alone too.
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create log: %w", err)
	}
	defer logFile.Close()

	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the platform binary: %w", err)
	}
	cmd := exec.Command(self, "up")
	cmd.Env = append(os.Environ(), readyFileEnv+"="+readyPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// A session of its own: it survives the task that started it, and
	// every process it starts stays in that session (each in a process
	// group of its own), which is how stop finds them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start platform: %w", err)
	}
	if err := os.WriteFile(pidPath(runDir), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The platform runs in a session of its own, which a Ctrl-C here does
	// not reach: stopped here rather than left starting unseen.
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(interrupted)

	deadline := time.After(90 * time.Second)
	// However it ends, the welcome, with a password generated now, is
	// shown here or nowhere.
	defer os.Remove(readyPath)
	for {
		select {
		case <-interrupted:
			fmt.Println("interrupted: stopping the platform that was starting")
			return errors.Join(errors.New("interrupted while starting"), stop(runDir))
		case err := <-exited:
			// The platform's own error is its last line, under the lines
			// Consul and the services log as they stop.
			return fmt.Errorf("platform exited before it was ready (%v): %s\nlast lines of %s:\n%s",
				err, lastWithPrefix(logPath, "platform: "), logPath, tail(logPath, 30))
		case <-deadline:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("platform not ready after 90s; last lines of %s:\n%s", logPath, tail(logPath, 30))
		case <-time.After(200 * time.Millisecond):
		}
		if welcome, err := os.ReadFile(readyPath); err == nil {
			fmt.Print(string(welcome))
			fmt.Printf("\nRunning in the background; logs in %s. Stop it with `go tool task stop`.\n", logPath)
			return nil
		}
	}
}

// stopTimeout is how long stop waits for the platform to stop its
// processes in order before it kills them.
const stopTimeout = 45 * time.Second

// stop signals the background platform, waits until it has exited, and
// then makes sure nothing of it is left: whatever is still in its session
// — the children of a platform that crashed or did not stop in time — is
// killed.
func stop(runDir string) error {
	pid, err := readPid(runDir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Println("not running")
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pid file: %w", err)
	}
	defer os.Remove(pidPath(runDir))
	defer os.Remove(readyPath(runDir))
	running := isPlatform(pid)
	stoppedInTime := true
	if running {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		stoppedInTime = waitFor(stopTimeout, func() bool { return !alive(pid) })
	} else if alive(pid) {
		// The pid file is stale and the pid belongs to someone else now:
		// neither it nor its session is ours.
		fmt.Println("not running")
		return nil
	}
	// A session's ID is its leader's pid, and Linux does not reuse a pid
	// while a process still carries it as its session ID, so whatever is
	// in this session is the platform's, even once the platform is gone.
	left, err := killSession(pid)
	switch {
	case err != nil:
		return fmt.Errorf("stop what the platform (pid %d) left: %w", pid, err)
	case !stoppedInTime:
		return fmt.Errorf("platform (pid %d) did not stop in %s; it and its processes were killed", pid, stopTimeout)
	case running && len(left) > 0:
		return fmt.Errorf("platform (pid %d) stopped but left processes %v running; they were killed", pid, left)
	case len(left) > 0:
		fmt.Printf("the platform (pid %d) was gone; killed the processes it left: %v\n", pid, left)
	case running:
		fmt.Println("stopped")
	default:
		fmt.Println("not running")
	}
	return nil
}

// killSession kills every process in session sid with SIGKILL and waits
// until they are gone; it returns the pids it found.
func killSession(sid int) ([]int, error) {
	pids, err := sessionProcesses(sid)
	if err != nil || len(pids) == 0 {
		return nil, err
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	var left []int
	if !waitFor(5*time.Second, func() bool {
		left, err = sessionProcesses(sid)
		return err == nil && len(left) == 0
	}) {
		return pids, errors.Join(err, fmt.Errorf("processes %v survived SIGKILL", left))
	}
	return pids, nil
}

// waitFor polls done until it holds or timeout passes, and reports which.
func waitFor(timeout time.Duration, done func() bool) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if done() {
			return true
		}
	}
	return done()
}

func pidPath(runDir string) string { return filepath.Join(runDir, "platform.pid") }

func readyPath(runDir string) string { return filepath.Join(runDir, "ready") }

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
	st, err := readStat(pid)
	return err != nil || st.state != "Z"
}

// isPlatform reports whether pid is a live background platform: a process
// of this binary leading its own session, as start runs it. A pid file
// outlives a reboot or a crash, and its pid may be another program's by now.
func isPlatform(pid int) bool {
	st, err := readStat(pid)
	if err != nil || st.state == "Z" || st.session != pid {
		return false
	}
	self, err := os.Executable()
	// comm is the executable's name cut to 15 bytes.
	return err == nil && st.comm == truncate(filepath.Base(self), 15)
}

func truncate(s string, n int) string { return s[:min(len(s), n)] }

// stat is what this command needs of /proc/<pid>/stat.
type stat struct {
	comm    string
	state   string
	session int
}

// readStat parses /proc/<pid>/stat (proc(5)): "pid (comm) state ppid pgrp
// session ...". comm may hold spaces and parentheses, so the fields are
// counted from the last ')'.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return stat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) < 4 {
		return stat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	session, err := strconv.Atoi(fields[3])
	if err != nil {
		return stat{}, fmt.Errorf("/proc/%d/stat: session: %w", pid, err)
	}
	return stat{comm: s[open+1 : end], state: fields[0], session: session}, nil
}

// sessionProcesses returns the live processes (zombies are dead already,
// waiting for their parent) whose session ID is sid.
func sessionProcesses(sid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process
		}
		st, err := readStat(pid)
		if err != nil {
			continue // exited meanwhile
		}
		if st.session == sid && st.state != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// lastWithPrefix returns the rest of the last line of path that starts
// with prefix, or "see below" when there is none.
func lastWithPrefix(path, prefix string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if rest, ok := strings.CutPrefix(lines[i], prefix); ok {
			return rest
		}
	}
	return "see below"
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
