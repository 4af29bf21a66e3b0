// Command rehash rewrites ../migrations/atlas.sum after a hand-written
// migration was added (such as the append-only trigger, which Ent cannot
// describe). Generated migrations update atlas.sum themselves; run this only
// for a file you wrote, after reviewing it:
//
//	cd auditsvc/ent && go run ./rehash
//
// It computes the sums exactly as atlas does (migrate.Dir.Checksum), so
// database.Migrate accepts the directory.
package main

import (
	"flag"
	"fmt"
	"os"

	"ariga.io/atlas/sql/migrate"
)

func main() {
	dirPath := flag.String("dir", "migrations", "migration directory")
	flag.Parse()
	if err := rehash(*dirPath); err != nil {
		fmt.Fprintln(os.Stderr, "rehash:", err)
		os.Exit(1)
	}
}

func rehash(dirPath string) error {
	dir, err := migrate.NewLocalDir(dirPath)
	if err != nil {
		return err
	}
	sum, err := dir.Checksum()
	if err != nil {
		return err
	}
	return migrate.WriteSumFile(dir, sum)
}
