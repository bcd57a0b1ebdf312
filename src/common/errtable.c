/* The one error table (common/errtable.h) and its lookups. */
#include <string.h>

#include "common/errtable.h"
#include "common/banned.h"

static const struct pbx_errtable_row rows[] = {
#define PBX_XX_ROW(id_, type_, status_, remote_, local_, exit_, python_, from_) \
    {.id = PBX_ERRTABLE_##id_,                                                  \
     .name = #id_,                                                              \
     .type = type_,                                                             \
     .status = status_,                                                         \
     .remote = remote_,                                                         \
     .local = local_,                                                           \
     .exit = exit_,                                                             \
     .python = python_,                                                         \
     .from = from_},
    PBX_ERRTABLE_MAP(PBX_XX_ROW)
#undef PBX_XX_ROW
};

_Static_assert(sizeof(rows) / sizeof(rows[0]) == PBX_ERRTABLE_COUNT, "one row per id");

const struct pbx_errtable_row *pbx_errtable_get(size_t id)
{
    return id < PBX_ERRTABLE_COUNT ? &rows[id] : NULL;
}

const struct pbx_errtable_row *pbx_errtable_of_type(const char *type)
{
    if (type == NULL)
        return NULL;
    for (size_t i = 0; i < PBX_ERRTABLE_COUNT; i++) {
        if (rows[i].type != NULL && strcmp(rows[i].type, type) == 0)
            return &rows[i];
    }
    return NULL;
}

const struct pbx_errtable_row *pbx_errtable_of_status(int status)
{
    for (size_t i = 0; i < PBX_ERRTABLE_COUNT; i++) {
        if (rows[i].status != 0 && rows[i].status == status)
            return &rows[i];
    }
    if (status >= 500 && status <= 599)
        return &rows[PBX_ERRTABLE_INTERNAL_SERVER_ERROR];
    return &rows[PBX_ERRTABLE_UNEXPECTED_STATUS];
}

const struct pbx_errtable_row *pbx_errtable_of_answer(const char *type, int status)
{
    const struct pbx_errtable_row *row = pbx_errtable_of_type(type);

    return row != NULL ? row : pbx_errtable_of_status(status);
}

const struct pbx_errtable_row *pbx_errtable_of_code(int code, bool compat)
{
    const struct pbx_errtable_row *any = NULL;

    for (size_t i = 0; i < PBX_ERRTABLE_COUNT; i++) {
        /* -code too: a -errno return passed on means what pbx_error_set() makes of it. */
        if (rows[i].from > 0 && (code == rows[i].from || code == -rows[i].from))
            return compat && rows[i].id == PBX_ERRTABLE_PAYLOAD_TOO_LARGE
                       ? &rows[PBX_ERRTABLE_VALIDATION_ERROR]
                       : &rows[i];
        if (rows[i].from == PBX_ERRTABLE_ANY)
            any = &rows[i];
    }
    PBX_ASSERT(any != NULL);
    return any;
}

const struct pbx_errtable_row *pbx_errtable_of_pybox_code(int code, bool local)
{
    if (code == PYBOX_OK)
        return NULL;
    for (size_t i = 0; i < PBX_ERRTABLE_COUNT; i++) {
        if ((local ? rows[i].local : (int)rows[i].remote) == code)
            return &rows[i];
    }
    return NULL;
}

int pbx_errtable_status(const char *type)
{
    const struct pbx_errtable_row *row = pbx_errtable_of_type(type);

    return row != NULL && row->status != 0 ? row->status : 500;
}
