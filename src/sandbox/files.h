/*
 * Moving files in and out of a cell's /work, done by the cell's C code (a
 * process that never runs user code).
 */
#ifndef PBX_SANDBOX_FILES_H
#define PBX_SANDBOX_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What became of one file to return (a returned-file record's state). */
enum pbx_file_state {
    PBX_FILE_OK = 0,
    PBX_FILE_NOT_FOUND = 1,
    PBX_FILE_NOT_REGULAR = 2, /* directory, FIFO, device, socket */
    PBX_FILE_SYMLINK = 3,     /* a symlink or a path through one */
    PBX_FILE_TOO_LARGE = 4,
    PBX_FILE_UNREADABLE = 5,
    PBX_FILE_BAD_NAME = 6,
    PBX_FILE_OVER_ANSWER = 7, /* within its own cap, past what the answer had left */
};

/*
 * Whether `name` (len bytes, not NUL-terminated) is an acceptable file name:
 * 1..255 bytes, no NUL, no '/', not "." or "..".  No syscalls (fuzzed).
 */
bool pbx_files_name_ok(const char *name, size_t len);

/*
 * Create `name` under the directory `dirfd` (exclusively, never through a
 * symlink) with `data`, owned by uid/gid.  Returns 0 or -errno.
 */
int pbx_files_write(int dirfd, const char *name, const void *data, size_t size, uint32_t uid,
                    uint32_t gid);

/*
 * Open `name` under `dirfd` for collection with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
 * RESOLVE_NO_XDEV), O_NONBLOCK so a FIFO never blocks, and accept only a
 * regular file of at most `max` bytes.  Returns the fd (caller closes) with
 * *size set, or -state (enum pbx_file_state).
 */
int pbx_files_open_return(int dirfd, const char *name, uint64_t max, uint64_t *size);

/* A path beneath /work: at most this long, of at most this many components. */
#define PBX_FILES_PATH_MAX   4095
#define PBX_FILES_PATH_DEPTH 8

/*
 * Whether `path` (len bytes) is an acceptable relative path: 1 to
 * PBX_FILES_PATH_DEPTH components separated by single '/', each valid per
 * pbx_files_name_ok() (so no "", "." or ".."), PBX_FILES_PATH_MAX bytes at
 * most.  No syscalls (fuzzed).
 */
bool pbx_files_path_ok(const char *path, size_t len);

/*
 * Open the directory that holds `path` (valid per pbx_files_path_ok())
 * beneath `workfd` as O_PATH, through no symlink, making missing directories
 * (owned by uid/gid) when `make`.  *leaf points at the last component, in
 * `path` (left as it was).  Returns the fd (caller closes) or -errno.
 */
int pbx_files_open_parent(int workfd, char *path, bool make, uint32_t uid, uint32_t gid,
                          const char **leaf);

#endif
