package database

// MigrationLockKey exposes the migration lock to the tests, which hold it
// to make a replica wait.
var MigrationLockKey = lockKey
