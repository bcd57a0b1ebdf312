/*
 * multipart/form-data bodies of execution requests (`POST /v1/execute`,
 * `POST /execute-with-files`), read as their parts arrive: each text part
 * goes to its field's taker in the dialect's table (request.c) once it is
 * complete, and file parts become input files as their bytes come.  The
 * first refusal is kept and answered when the body has ended.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "server/request.h"
#include "server/request_internal.h"
#include "common/banned.h"

void pbx__request_form_init(struct pbx_request_form *f, const struct pbx_request_caps *caps)
{
    memset(f, 0, sizeof(*f));
    f->caps = *caps;
}

void pbx__request_form_init_upload(struct pbx_request_form *f, const struct pbx_request_caps *caps)
{
    pbx__request_form_init(f, caps);
    f->upload = true;
    f->shape.s4 = true;
}

/* The fields of the form's dialect. */
static const struct field *form_fields(const struct pbx_request_form *f)
{
    return f->upload ? pbx__request_upload_fields : pbx__request_v1_fields;
}

void pbx__request_form_release(struct pbx_request_form *f)
{
    pbx__request_release(&f->req);
    pbx_buf_release(&f->value);
    pbx_error_free(&f->err);
    memset(f, 0, sizeof(*f));
}

static void form_fail(struct pbx_request_form *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Keep the first refusal. */
static void form_fail(struct pbx_request_form *f, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (f->err != NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pbx_error_set(&f->err, PBX_E_INVAL, "%s", msg);
}

void pbx__request_form_refuse(struct pbx_request_form *f, const char *msg)
{
    form_fail(f, "%s", msg);
}

/* The text field read so far is complete: its taker puts it into the request. */
static void form_flush(struct pbx_request_form *f)
{
    const struct field *fd = pbx__request_find_field(form_fields(f), f->field);

    if (fd != NULL && f->err == NULL) {
        const struct value value = {.text = &f->value};

        /* S4's schema first, as FastAPI validates the form before its handler sees it. */
        if (!f->upload || pbx__request_s4_check(fd->name, &value, &f->shape, &f->err) == 0)
            (void)fd->take(&f->req, &f->caps, fd->name, &value, &f->err);
    }
    f->field[0] = '\0';
    pbx_buf_release(&f->value);
}

/* A text part named `name` starts: a field of the dialect, not given before. */
static void form_field_start(struct pbx_request_form *f, const char *name)
{
    const struct field *fd = pbx__request_find_field(form_fields(f), name);
    unsigned bit;
    size_t max;

    if (fd == NULL) {
        if (f->err == NULL)
            (void)pbx__request_refuse_unknown(form_fields(f), name, &f->err);
        return;
    }
    bit = 1u << (fd - form_fields(f));
    if ((f->seen & bit) != 0 && !fd->repeats) {
        form_fail(f, "field `%s` is given twice", fd->name);
        return;
    }
    f->seen |= bit;
    switch (fd->size) {
    case FORM_CODE:
        max = SIZE_MAX;
        break;
    case FORM_STDIN:
        /* One byte past the cap is kept, so the taker refuses it as it refuses JSON's. */
        max = f->caps.max_stdin < SIZE_MAX ? f->caps.max_stdin + 1 : SIZE_MAX;
        break;
    default:
        max = FORM_SHORT_MAX;
        break;
    }
    snprintf(f->field, sizeof(f->field), "%s", fd->name);
    pbx_buf_init(&f->value, max);
}

/* A file part starts: an input file, or nothing for an empty file input. */
static void form_file_start(struct pbx_request_form *f, const char *filename)
{
    f->in_file = false;
    if (filename[0] == '\0')
        return; /* an empty file input: its data, if any, goes nowhere */
    if (pbx__request_add_file(&f->req, &f->caps, filename, "", 0, &f->err) < 0)
        return;
    f->file_alloc = 0;
    f->in_file = true;
}

static void form_file_data(struct pbx_request_form *f, const char *data, size_t size)
{
    struct pbx_file_in *file;

    if (!f->in_file || size == 0)
        return;
    file = &f->req.files[f->req.nfiles - 1];
    if (file->size + size > f->caps.max_file_bytes) {
        (void)pbx__request_refuse_large(file->name, &f->caps, &f->err);
        return;
    }
    if (file->size + size > f->file_alloc) {
        f->file_alloc = (file->size + size) * 2;
        file->data = xrealloc((void *)file->data, f->file_alloc);
    }
    memcpy((char *)file->data + file->size, data, size);
    file->size += size;
}

void pbx__request_form_data(struct pbx_request_form *f, const char *name, const char *filename,
                            const char *data, uint64_t off, size_t size)
{
    if (f->err != NULL)
        return; /* keep reading; the refusal is answered at the end */
    if (data == NULL)
        size = 0;
    if (filename != NULL) {
        if (off == 0) {
            form_flush(f);
            if (f->err == NULL)
                form_file_start(f, filename);
        }
        if (f->err == NULL)
            form_file_data(f, data, size);
        return;
    }
    /* A part whose headers name no field (or an empty one) cannot be placed. */
    if (name == NULL || name[0] == '\0') {
        form_fail(f, "a form part has no field name (Content-Disposition: form-data; name=...)");
        return;
    }
    if (off == 0 || strcmp(name, f->field) != 0) {
        form_flush(f);
        f->in_file = false;
        if (f->err == NULL)
            form_field_start(f, name);
        if (f->err != NULL)
            return;
    }
    if (pbx_buf_append_trunc(&f->value, data, size) < size &&
        pbx__request_find_field(form_fields(f), f->field)->size == FORM_SHORT)
        form_fail(f, "form field `%s` is over %d bytes", f->field, FORM_SHORT_MAX);
}

int pbx__request_form_finish(struct pbx_request_form *f, struct pbx_http_request *out,
                             struct pbx_error **err)
{
    form_flush(f);
    if (f->err == NULL && f->upload && f->req.code == NULL)
        (void)pbx__request_s4_refuse(&f->shape, "code", "missing", "Field required", &f->err);
    if (f->err == NULL)
        (void)pbx__request_finish_code(&f->req, &f->err);
    if (f->err != NULL) {
        *err = steal_pointer(&f->err);
        return -1;
    }
    *out = f->req;
    memset(&f->req, 0, sizeof(f->req));
    return 0;
}
