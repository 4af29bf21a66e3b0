package platform

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// prefixLog writes whole lines from several processes to one writer, each
// prefixed with the process name, optionally in colour.
type prefixLog struct {
	mu     sync.Mutex
	w      io.Writer
	colour bool
	width  int
	codes  map[string]string
}

var palette = []string{"36", "33", "35", "32", "34", "91", "96", "93"}

func newPrefixLog(w io.Writer, colour bool, names ...string) *prefixLog {
	l := &prefixLog{w: w, colour: colour, codes: map[string]string{}}
	for i, n := range names {
		l.codes[n] = palette[i%len(palette)]
		l.width = max(l.width, len(n))
	}
	return l
}

func (l *prefixLog) printf(name, format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	prefix := name + strings.Repeat(" ", max(0, l.width-len(name))) + " | "
	if l.colour {
		code := l.codes[name]
		if code == "" {
			code = "1"
		}
		prefix = "\x1b[" + code + "m" + prefix + "\x1b[0m"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, prefix+line+"\n")
}
