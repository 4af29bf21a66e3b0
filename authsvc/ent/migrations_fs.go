package ent

import "io/fs"

// Migrations returns the migrations directory as the root of an fs.FS, the
// form database.NewEntClient takes.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory is there at compile time
	}
	return sub
}
