package edge_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// split gives this process the first of the machine's CPUs and the
// processes pids, their threads and their children (nginx's workers) the
// others, so that a proxy in its own process runs on cores of its own, as
// it does when deployed, while the client and the service share the
// first. It returns false, and changes nothing, on a machine with fewer
// than two CPUs. undo gives every thread back the CPUs this process had.
func split(t testing.TB, pids ...int) (undo func(), ok bool) {
	t.Helper()
	var all unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(0, &all))
	var cpus []int
	for cpu := range 1024 {
		if all.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	if len(cpus) < 2 {
		return func() {}, false
	}
	var mine, theirs unix.CPUSet
	mine.Set(cpus[0])
	for _, cpu := range cpus[1:] {
		theirs.Set(cpu)
	}
	procs := withChildren(pids)
	prev := runtime.GOMAXPROCS(1)
	setAffinity(t, []int{os.Getpid()}, &mine)
	setAffinity(t, procs, &theirs)
	return func() {
		setAffinity(t, append(withChildren(pids), os.Getpid()), &all)
		runtime.GOMAXPROCS(prev)
	}, true
}

// setAffinity sets the CPU affinity of every thread of the processes
// pids. Threads started later inherit it from the thread that starts them.
func setAffinity(t testing.TB, pids []int, set *unix.CPUSet) {
	t.Helper()
	for _, pid := range pids {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		require.NoError(t, err)
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			require.NoError(t, err)
			if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
				require.NoError(t, err, "pin thread %d of process %d", tid, pid)
			}
		}
	}
}

// withChildren returns pids and the processes they started, directly or not.
func withChildren(pids []int) []int {
	parent := map[int]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...: the command name may hold spaces but
		// ends with the last ')'.
		s := string(data)
		pid, _ := strconv.Atoi(strings.Fields(s)[0])
		rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(rest) > 1 {
			parent[pid], _ = strconv.Atoi(rest[1])
		}
	}
	out := append([]int(nil), pids...)
	for added := true; added; {
		added = false
		for pid, ppid := range parent {
			if slices.Contains(out, ppid) && !slices.Contains(out, pid) {
				out = append(out, pid)
				added = true
			}
		}
	}
	return out
}
