/* Small HDF5 helpers shared by the modules that read and write HDF5 files
 * (dataset, checkpoint): silencing HDF5's automatic error printing around calls
 * whose failure we report ourselves, the innermost message of the error stack
 * for our one-line errors, and string / integer attributes. */
#ifndef FT_H5UTIL_H
#define FT_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* The automatic error handler saved by h5util_quiet_begin. */
struct h5util_quiet {
    H5E_auto2_t func;
    void *data;
};

/* Turns HDF5's automatic error-stack printing off until h5util_quiet_end. */
void h5util_quiet_begin(struct h5util_quiet *q);
void h5util_quiet_end(const struct h5util_quiet *q);

/* Copies the most specific description on HDF5's current error stack into buf
 * (e.g. "truncated file: eof = 100, ..."), or "unknown HDF5 error"; call it right
 * after the failing call, before any other HDF5 call clears the stack. */
void h5util_err_detail(char *buf, size_t size);

/* Writes a fixed-length, NUL-terminated ASCII string attribute on obj. */
int h5util_write_str_attr(hid_t obj, const char *name, const char *value);
/* Reads a string attribute (fixed- or variable-length, as h5py writes) into buf.
 * Returns 1 if read, 0 if absent, -1 if it is not a string or cannot be read. */
int h5util_read_str_attr(hid_t obj, const char *name, char *buf, size_t size);
/* Writes an int64 attribute of n elements (n = 1: scalar). */
int h5util_write_i64_attr(hid_t obj, const char *name, const int64_t *v, size_t n);
/* Reads an integer attribute of exactly n elements (scalar or 1-D) as int64.
 * Returns 1 if read, 0 if absent, -1 if not an integer or of another size. */
int h5util_read_i64_attr(hid_t obj, const char *name, int64_t *v, size_t n);

#endif
