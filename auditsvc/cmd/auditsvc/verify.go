package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"

	"portcullis.dev/auditsvc/internal/handler"
)

// verify is `auditsvc verify [--file FILE] [--after-sequence N --after-hash
// HEX]`: it recomputes the hash chain of an export read from FILE (or stdin
// when FILE is "-" or unset) and returns the exit code: 0 when the chain
// holds, 1 when it is broken, cut at its start, empty or unreadable, 2 for
// bad usage. A whole export starts at sequence 1; one resumed with
// after_sequence N starts after the anchor an earlier verify printed.
func verify(args []string, stdin io.Reader, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stdout)
	file := fs.String("file", "-", "export to verify: JSON objects as ExportEvents streams them, one per line; - for stdin")
	after := fs.Int64("after-sequence", 0, "the export was resumed after this sequence (ExportEvents after_sequence)")
	afterHex := fs.String("after-hash", "", "the hash of that sequence, as an earlier verify printed it; required with --after-sequence")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: auditsvc verify --file export.ndjson [--after-sequence N --after-hash HEX]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2, nil // flag has printed the problem and the usage
	}
	afterHash, err := hex.DecodeString(*afterHex)
	if fs.NArg() > 0 || *after < 0 || err != nil || (*after > 0) != (len(afterHash) > 0) {
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
	res, err := handler.VerifyExport(in, *after, afterHash)
	if err != nil {
		return 1, err
	}
	if !res.OK {
		fmt.Fprintf(stdout, "BROKEN at sequence %d (%d events checked)\n", res.FirstBroken, res.Checked)
		return 1, nil
	}
	fmt.Fprintf(stdout, "OK %d events, sequences %d to %d, last hash %s\n",
		res.Checked, res.LastSequence-res.Checked+1, res.LastSequence, hex.EncodeToString(res.LastHash))
	return 0, nil
}
