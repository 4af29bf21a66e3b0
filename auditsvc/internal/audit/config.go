package audit

import "cmp"

// Config is the Audit service's `audit:` section. Zero values mean the
// defaults named on each field.
type Config struct {
	// MaxBatchSize caps the events of one Record call. The contract allows
	// at most 500. Zero means 500.
	MaxBatchSize int `koanf:"max_batch_size" validate:"min=0,max=500"`
	// MaxMetadataEntries caps the metadata entries of one event. The
	// contract allows at most 32. Zero means 32.
	MaxMetadataEntries int `koanf:"max_metadata_entries" validate:"min=0,max=32"`
	// MaxMetadataBytes caps the summed length of one event's metadata keys
	// and values. Zero means 8192.
	MaxMetadataBytes int `koanf:"max_metadata_bytes" validate:"min=0,max=1048576"`
	// DefaultPageSize is the page size of a QueryEvents call that asks for
	// none. Zero means 100.
	DefaultPageSize int `koanf:"default_page_size" validate:"min=0,max=1000"`
	// MaxPageSize caps a QueryEvents page. Zero means 1000.
	MaxPageSize int `koanf:"max_page_size" validate:"min=0,max=1000"`
	// ReadChunk is how many events ExportEvents and VerifyChain read from
	// the database at a time. Zero means 1000.
	ReadChunk int `koanf:"read_chunk" validate:"min=0,max=100000"`
}

func (c Config) withDefaults() Config {
	c.MaxBatchSize = cmp.Or(c.MaxBatchSize, 500)
	c.MaxMetadataEntries = cmp.Or(c.MaxMetadataEntries, 32)
	c.MaxMetadataBytes = cmp.Or(c.MaxMetadataBytes, 8192)
	c.DefaultPageSize = cmp.Or(c.DefaultPageSize, 100)
	c.MaxPageSize = cmp.Or(c.MaxPageSize, 1000)
	c.ReadChunk = cmp.Or(c.ReadChunk, 1000)
	return c
}
