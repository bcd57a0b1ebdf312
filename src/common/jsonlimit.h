/*
 * The cost of parsing untrusted JSON, bounded before a tree is built.  A
 * parser's tree costs tens of bytes per value, so a body of empty arrays
 * (`[[],[],...]`) would cost 20-50 times its size; a scan that counts values
 * and depth without allocating refuses it first.
 */
#ifndef PBX_COMMON_JSONLIMIT_H
#define PBX_COMMON_JSONLIMIT_H

#include <stdbool.h>
#include <stddef.h>

struct pbx_json_shape {
    size_t values;  /* an upper bound of the values the text holds */
    unsigned depth; /* the deepest nesting of arrays and objects */
};

/*
 * Scan `text` (not necessarily valid JSON: the parser judges that) and say
 * whether it holds at most `max_values` values nested at most `max_depth`
 * deep.  *shape gets what was counted, up to where the scan stopped.
 */
bool pbx_json_within(const char *text, size_t len, size_t max_values, unsigned max_depth,
                     struct pbx_json_shape *shape);

#endif
