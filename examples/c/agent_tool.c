/*
 * agent_tool: a "run Python" tool for an AI agent written in C.
 *
 * An agent framework registers a tool as a name, a description, a JSON
 * schema of its arguments and a function from arguments to a text answer for
 * the model.  run_python() is that function: code in, a JSON string out,
 * always (a failure to run is an answer too, so the model can react).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pybox/pybox.h>

/* What the framework shows the model. */
static const char run_python_name[] = "run_python";
static const char run_python_description[] =
    "Run Python 3 code in a sandbox (no network, 10 s, 256 MiB) and return its status, stdout, "
    "stderr and error as JSON. Print what you want to see.";
static const char run_python_schema[] = "{\"type\": \"object\", \"properties\": {\"code\": "
                                        "{\"type\": \"string\"}}, \"required\": [\"code\"]}";

/* `text` as a JSON string literal, quotes included (caller frees); NULL when out of memory. */
static char *json_quote(const char *text)
{
    size_t len = strlen(text);
    char *q = malloc(len * 6 + 3);
    char *p = q;

    if (q == NULL)
        return NULL;
    *p++ = '"';
    for (const unsigned char *s = (const unsigned char *)text; *s; s++) {
        if (*s == '"' || *s == '\\') {
            *p++ = '\\';
            *p++ = (char)*s;
        } else if (*s < 0x20) {
            p += snprintf(p, 7, "\\u%04x", *s);
        } else {
            *p++ = (char)*s;
        }
    }
    *p++ = '"';
    *p = '\0';
    return q;
}

/*
 * The tool: run `code` on `client` and describe what happened as JSON (the
 * result object of `pybox run --json`, or {"status": "failed", "error": ...}
 * when it could not run).  Thread-safe; the caller frees the answer.
 */
static char *run_python(struct pybox_client *client, const char *code)
{
    struct pybox_exec *exec = pybox_exec_new();
    struct pybox_result *res = NULL;
    struct pybox_error *err = NULL;
    enum pybox_code rc;
    char *answer = NULL;

    rc = exec ? pybox_exec_set_code(exec, code, (size_t)-1) : PYBOX_E_NOMEM;
    if (rc == PYBOX_OK)
        rc = pybox_run(client, exec, &res, &err);
    if (rc == PYBOX_OK) {
        answer = strdup(pybox_result_to_json(res));
    } else {
        char *msg = json_quote(err ? pybox_error_message(err) : pybox_strerror(rc));
        size_t len = (msg ? strlen(msg) : 0) + 128;

        answer = msg ? malloc(len) : NULL;
        if (answer != NULL)
            snprintf(answer, len,
                     "{\"status\":\"failed\",\"error\":{\"type\":\"%s\",\"message\":%s}}",
                     pybox_code_name(rc), msg);
        free(msg);
    }
    pybox_error_free(err);
    pybox_result_free(res);
    pybox_exec_free(exec);
    return answer;
}

int main(void)
{
    static const char *const calls[] = {
        "import math\nprint(math.factorial(10))",
        "print(1 / 0)",
    };
    struct pybox_client *client = NULL;
    struct pybox_error *err = NULL;

    if (pybox_client_new_from_env(&client, &err) != PYBOX_OK) {
        fprintf(stderr, "agent_tool: %s\n", pybox_error_message(err));
        pybox_error_free(err);
        return 1;
    }
    /* Registering the tool: here only shown on stderr. */
    fprintf(stderr, "tool %s: %s\narguments: %s\n", run_python_name, run_python_description,
            run_python_schema);
    /* What the framework would do with each tool call the model makes. */
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        char *answer = run_python(client, calls[i]);

        if (answer == NULL) {
            pybox_client_free(client);
            return 1;
        }
        printf("%s\n", answer);
        free(answer);
    }
    pybox_client_free(client);
    return 0;
}
