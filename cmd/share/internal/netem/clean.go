package netem

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsDir is where named network namespaces are bind-mounted (ip-netns(8)).
const nsDir = "/run/netns"

// ownerID returns "PID-START" for a live process: START is its start time
// in clock ticks since boot (field 22 of /proc/PID/stat), in base 36, so a
// reused PID does not pass for the owner.
func ownerID(pid int) (string, error) {
	start, err := startTime(pid)
	if err != nil {
		return "", err
	}
	return strconv.Itoa(pid) + "-" + strconv.FormatUint(start, 36), nil
}

func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("netem: /proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("netem: /proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22; f[0] is field 3
}

// Cleaned is what Cleanup removed.
type Cleaned struct {
	Namespaces []string // names of the namespaces deleted
	Killed     []string // processes killed inside them, as "PID (command)"
}

func (c Cleaned) String() string {
	if len(c.Namespaces) == 0 {
		return "nothing"
	}
	s := fmt.Sprintf("%d namespaces of dead runs (%s", len(c.Namespaces), c.Namespaces[0])
	if len(c.Namespaces) > 1 {
		s += ", ..."
	}
	s += "), with their veths and bridges"
	if len(c.Killed) > 0 {
		s += fmt.Sprintf("; killed %d processes left in them (%s)", len(c.Killed), strings.Join(c.Killed, ", "))
	}
	return s
}

// Cleanup deletes the namespaces named with prefix ("": DefaultPrefix) whose
// owner process is dead, after killing any process still inside them. A
// namespace whose owner is alive, or whose name is not of this package, is
// never touched. It needs root; without it there is nothing it may clean and
// it returns ErrNotRoot.
func Cleanup(prefix string) (Cleaned, error) {
	var c Cleaned
	if os.Geteuid() != 0 {
		return c, ErrNotRoot
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	ents, err := os.ReadDir(nsDir)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `-([0-9]+)-([0-9a-z]+)-[0-9a-z]+-[a-z0-9.]+$`)
	var errs []error
	for _, e := range ents {
		m := re.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if owner, err := ownerID(pid); err == nil && owner == m[1]+"-"+m[2] {
			continue // its owner runs
		}
		killed, err := killIn(e.Name())
		c.Killed = append(c.Killed, killed...)
		if err != nil {
			errs = append(errs, err)
		}
		if err := deleteNamed(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("netem: delete %s: %w", e.Name(), err))
			continue
		}
		c.Namespaces = append(c.Namespaces, e.Name())
	}
	return c, errors.Join(errs...)
}

// killIn kills (SIGKILL) every process whose network namespace is the named
// one, and waits up to 5 s for them to be gone. It returns "PID (comm)" of
// each.
func killIn(name string) ([]string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(nsDir, name), &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	procs, _ := os.ReadDir("/proc")
	var pids []int
	var killed []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var ps syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &ps) != nil || ps.Ino != st.Ino || ps.Dev != st.Dev {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			pids = append(pids, pid)
			killed = append(killed, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(string(comm))))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(pids) > 0 && time.Now().Before(deadline) {
		pids = slices.DeleteFunc(pids, func(pid int) bool {
			// A zombie (a child of ours not yet reaped) holds no namespace.
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				return true
			}
			i := strings.LastIndexByte(string(b), ')')
			return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
		})
		if len(pids) > 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if len(pids) > 0 {
		return killed, fmt.Errorf("netem: processes %v in %s did not die", pids, name)
	}
	return killed, nil
}

// deleteNamed unmounts and removes a named namespace. A name whose mount is
// missing (a run killed while creating it) is removed all the same.
func deleteNamed(name string) error {
	err := netns.DeleteNamed(name)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if errors.Is(err, unix.EINVAL) { // not a mount point
		if err := os.Remove(filepath.Join(nsDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return err
}
