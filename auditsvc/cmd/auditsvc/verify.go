package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"

	"portcullis.dev/auditsvc/internal/handler"
)

// verify is `auditsvc verify [--file FILE]`: it recomputes the hash chain of
// an export read from FILE (or stdin when FILE is "-" or unset) and returns
// the exit code: 0 when the chain holds, 1 when it is broken or unreadable,
// 2 for bad usage.
func verify(args []string, stdin io.Reader, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stdout)
	file := fs.String("file", "-", "export to verify: JSON objects as ExportEvents streams them, one per line; - for stdin")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: auditsvc verify --file export.ndjson")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2, nil // flag has printed the problem and the usage
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2, nil
	}
	in := stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return 1, err
		}
		defer f.Close()
		in = f
	}
	res, err := handler.VerifyExport(in)
	if err != nil {
		return 1, err
	}
	if !res.OK {
		fmt.Fprintf(stdout, "BROKEN at sequence %d (%d events checked)\n", res.FirstBroken, res.Checked)
		return 1, nil
	}
	fmt.Fprintf(stdout, "OK %d events, last hash %s\n", res.Checked, hex.EncodeToString(res.LastHash))
	return 0, nil
}
