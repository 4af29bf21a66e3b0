package edge_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
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
	// No process (nginx missing) is pid 0, whose children are all of them.
	pids = slices.DeleteFunc(slices.Clone(pids), func(pid int) bool { return pid <= 0 })
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
		if errors.Is(err, fs.ErrNotExist) {
			continue // it exited
		}
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
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range procs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		if fields, err := procStat(pid); err == nil && len(fields) > 1 {
			parent[pid], _ = strconv.Atoi(fields[1])
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
