/*
 * multipart/form-data bodies of POST /v1/execute and POST
 * /execute-with-files: libmicrohttpd's post processor splits the body into
 * parts as it arrives, and hands each chunk to the form reader of
 * src/server/request_form.c, which checks the fields as a JSON body's are.
 * Nothing here judges a field.
 */
#include <string.h>

#include "server/internal.h"
#include "common/banned.h"

/* The post processor's iterator: every chunk of every part, text or file. */
static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
    struct multipart *m = cls;

    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    pbx__request_form_data(&m->form, key, filename, data, off, size);
    return MHD_YES; /* a refused part is answered once the body has ended */
}

bool pbx__multipart_begin(struct multipart *m, struct MHD_Connection *c,
                          const struct pbx_request_caps *caps, bool upload)
{
    if (upload)
        pbx__request_form_init_upload(&m->form, caps);
    else
        pbx__request_form_init(&m->form, caps);
    m->pp = MHD_create_post_processor(c, 64 * 1024, on_part, m);
    return m->pp != NULL;
}

void pbx__multipart_feed(struct multipart *m, const char *data, size_t size)
{
    if (MHD_post_process(m->pp, data, size) != MHD_YES)
        pbx__request_form_refuse(&m->form, "malformed multipart/form-data body");
}

int pbx__multipart_finish(struct multipart *m, struct pbx_http_request *out,
                          struct pbx_request_shape *shape, struct pbx_error **err)
{
    enum MHD_Result whole;
    int rc;

    /*
     * The post processor is destroyed here, before the form is judged: that
     * hands over the last value of a urlencoded form, and its answer is the
     * only word on whether the form was finished.  A body that ends inside a
     * part (no closing boundary) is MHD_NO, and the part read so far is not a
     * field's value: running it would run a truncated program (`prin` of
     * `print(1)`).
     */
    whole = MHD_destroy_post_processor(m->pp);
    m->pp = NULL;
    if (whole != MHD_YES)
        pbx__request_form_refuse(&m->form, "malformed multipart/form-data body: it ends "
                                           "before the form's closing boundary");
    rc = pbx__request_form_finish(&m->form, out, err);
    *shape = m->form.shape;
    return rc;
}

void pbx__multipart_release(struct multipart *m)
{
    if (m->pp != NULL)
        MHD_destroy_post_processor(m->pp);
    pbx__request_form_release(&m->form);
    memset(m, 0, sizeof(*m));
}
