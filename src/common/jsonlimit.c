/*
 * A bound on the values and depth of JSON text, found without allocating.
 * Every value but the first follows a `,` or `:` or opens with `[` or `{`
 * outside a string, so counting those bytes (plus one) bounds the values from
 * above; strings are skipped with their escapes.
 */
#include "common/jsonlimit.h"
#include "common/banned.h"

bool pbx_json_within(const char *text, size_t len, size_t max_values, unsigned max_depth,
                     struct pbx_json_shape *shape)
{
    size_t values = 1;
    unsigned depth = 0;
    unsigned deepest = 0;
    bool ok = true;
    size_t i = 0;

    while (i < len && ok) {
        char ch = text[i++];

        switch (ch) {
        case '"':
            while (i < len && text[i] != '"')
                i += text[i] == '\\' ? 2 : 1;
            i++;
            break;
        case '[':
        case '{':
            values++;
            depth++;
            if (depth > deepest)
                deepest = depth;
            break;
        case ']':
        case '}':
            if (depth > 0)
                depth--;
            break;
        case ',':
        case ':':
            values++;
            break;
        default:
            break;
        }
        ok = values <= max_values && deepest <= max_depth;
    }
    shape->values = values;
    shape->depth = deepest;
    return ok;
}
