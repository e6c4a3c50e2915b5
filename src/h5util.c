/* HDF5 helpers (include/h5util.h): quiet error handling, the innermost error
 * message, and string / int64 attributes. Strings are written fixed-length ASCII
 * and read in either form, so files made by h5py (variable-length UTF-8) load. */
#include "h5util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void h5util_quiet_begin(struct h5util_quiet *q)
{
    q->func = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void h5util_quiet_end(const struct h5util_quiet *q)
{
    H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

struct err_walk {
    char *buf;
    size_t size;
};

/* Walked upward, entry 0 is where the error was first detected. */
static herr_t err_walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    struct err_walk *w = data;
    if (n == 0 && e->desc && e->desc[0])
        snprintf(w->buf, w->size, "%s", e->desc);
    return 0;
}

void h5util_err_detail(char *buf, size_t size)
{
    struct err_walk w = {buf, size};
    if (size == 0)
        return;
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, err_walk_cb, &w);
    if (!buf[0])
        snprintf(buf, size, "unknown HDF5 error");
}

int h5util_write_str_attr(hid_t obj, const char *name, const char *value)
{
    int rc = -1;
    hid_t type = H5I_INVALID_HID, space = H5I_INVALID_HID, attr = H5I_INVALID_HID;

    type = H5Tcopy(H5T_C_S1);
    if (type < 0 || H5Tset_size(type, strlen(value) + 1) < 0 || H5Tset_strpad(type, H5T_STR_NULLTERM) < 0)
        goto cleanup;
    space = H5Screate(H5S_SCALAR);
    if (space < 0)
        goto cleanup;
    attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, type, value) < 0)
        goto cleanup;
    rc = 0;
cleanup:
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return rc;
}

int h5util_read_str_attr(hid_t obj, const char *name, char *buf, size_t size)
{
    int rc = -1;
    hid_t attr = H5I_INVALID_HID, type = H5I_INVALID_HID, mem = H5I_INVALID_HID;
    hid_t space = H5I_INVALID_HID;
    char *tmp = NULL;

    if (size == 0)
        return -1;
    buf[0] = '\0';
    htri_t ex = H5Aexists(obj, name);
    if (ex <= 0)
        return ex == 0 ? 0 : -1;
    attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0)
        goto cleanup;
    type = H5Aget_type(attr);
    space = H5Aget_space(attr);
    if (type < 0 || space < 0 || H5Tget_class(type) != H5T_STRING || H5Sget_simple_extent_npoints(space) != 1)
        goto cleanup;
    mem = H5Tcopy(H5T_C_S1);
    if (mem < 0 || H5Tset_cset(mem, H5Tget_cset(type)) < 0)
        goto cleanup;
    if (H5Tis_variable_str(type) > 0) {
        char *s = NULL;
        if (H5Tset_size(mem, H5T_VARIABLE) < 0 || H5Aread(attr, mem, &s) < 0)
            goto cleanup;
        snprintf(buf, size, "%s", s ? s : "");
        H5free_memory(s);
    } else {
        size_t len = H5Tget_size(type);
        if (len == 0 || H5Tset_size(mem, len) < 0 || H5Tset_strpad(mem, H5Tget_strpad(type)) < 0)
            goto cleanup;
        tmp = calloc(len + 1, 1);
        if (!tmp || H5Aread(attr, mem, tmp) < 0)
            goto cleanup;
        snprintf(buf, size, "%s", tmp);
    }
    rc = 1;
cleanup:
    free(tmp);
    if (mem >= 0) H5Tclose(mem);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (attr >= 0) H5Aclose(attr);
    return rc;
}

int h5util_write_i64_attr(hid_t obj, const char *name, const int64_t *v, size_t n)
{
    int rc = -1;
    hsize_t dim = n;
    hid_t space = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL);
    hid_t attr = H5I_INVALID_HID;

    if (space < 0)
        goto cleanup;
    attr = H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, H5T_NATIVE_INT64, v) < 0)
        goto cleanup;
    rc = 0;
cleanup:
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    return rc;
}

int h5util_read_i64_attr(hid_t obj, const char *name, int64_t *v, size_t n)
{
    int rc = -1;
    hid_t attr = H5I_INVALID_HID, type = H5I_INVALID_HID, space = H5I_INVALID_HID;

    htri_t ex = H5Aexists(obj, name);
    if (ex <= 0)
        return ex == 0 ? 0 : -1;
    attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0)
        goto cleanup;
    type = H5Aget_type(attr);
    space = H5Aget_space(attr);
    if (type < 0 || space < 0 || H5Tget_class(type) != H5T_INTEGER)
        goto cleanup;
    if (H5Sget_simple_extent_ndims(space) > 1 || H5Sget_simple_extent_npoints(space) != (hssize_t)n)
        goto cleanup;
    if (H5Aread(attr, H5T_NATIVE_INT64, v) < 0)
        goto cleanup;
    rc = 1;
cleanup:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (attr >= 0) H5Aclose(attr);
    return rc;
}
