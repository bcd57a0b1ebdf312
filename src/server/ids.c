/* The format of session and MCP session ids: made here, read here (ids.h). */
#include <string.h>

#include <sodium.h>

#include "server/ids.h"
#include "common/banned.h"

static bool all_of(const char *s, size_t n, const char *set)
{
    return strspn(s, set) >= n;
}

bool pbx_server_node_id_valid(const char *node)
{
    size_t n = node != NULL ? strlen(node) : 0;

    return n >= 1 && n <= PBX_NODE_ID_MAX &&
           all_of(node, n, "abcdefghijklmnopqrstuvwxyz0123456789");
}

void pbx__id_make(const char *kind, const char *node, char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[PBX_ID_HEX / 2];
    char digits[PBX_ID_HEX + 1];
    bool named = node != NULL && *node != '\0';
    size_t n = strlen(kind);

    randombytes_buf(raw, sizeof(raw));
    for (size_t i = 0; i < sizeof(raw); i++) {
        digits[2 * i] = hex[raw[i] >> 4];
        digits[2 * i + 1] = hex[raw[i] & 15];
    }
    digits[PBX_ID_HEX] = '\0';
    /* kind, "_", [node, "_"], digits: each piece copied while it fits. */
    out[0] = '\0';
    if (len < n + 2 + (named ? strlen(node) + 1 : 0) + PBX_ID_HEX)
        return;
    memcpy(out, kind, n);
    out[n++] = '_';
    if (named) {
        size_t m = strlen(node);

        memcpy(out + n, node, m);
        n += m;
        out[n++] = '_';
    }
    memcpy(out + n, digits, PBX_ID_HEX + 1);
}

bool pbx__id_parse(const char *kind, const char *id, char node[PBX_NODE_ID_MAX + 1])
{
    size_t k = strlen(kind);
    size_t len, m;
    const char *rest;

    node[0] = '\0';
    if (id == NULL || strncmp(id, kind, k) != 0 || id[k] != '_')
        return false;
    rest = id + k + 1;
    len = strlen(rest);
    if (len == PBX_ID_HEX)
        return all_of(rest, PBX_ID_HEX, "0123456789abcdef");
    m = strcspn(rest, "_");
    if (m == 0 || m > PBX_NODE_ID_MAX || len != m + 1 + PBX_ID_HEX ||
        !all_of(rest, m, "abcdefghijklmnopqrstuvwxyz0123456789") ||
        !all_of(rest + m + 1, PBX_ID_HEX, "0123456789abcdef"))
        return false;
    memcpy(node, rest, m);
    node[m] = '\0';
    return true;
}

bool pbx__id_elsewhere(const char *kind, const char *id, const char *self,
                       char node[PBX_NODE_ID_MAX + 1])
{
    if (!pbx__id_parse(kind, id, node) || node[0] == '\0')
        return false;
    return self == NULL || strcmp(node, self) != 0;
}
