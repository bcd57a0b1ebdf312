/*
 * session: a libpybox session that keeps its state between runs, with the
 * output streamed as it is produced.  Local mode unless PYBOX_SERVER names a
 * pybox server; the code does not change.
 *
 *     cc session.c $(pkg-config --cflags --libs libpybox) && ./a.out
 */
#include <stdio.h>

#include <pybox/pybox.h>

/* Called as the code runs: its output as it comes (in pieces of any size). */
static void on_event(enum pybox_event_kind kind, const char *data, size_t len, void *arg)
{
    (void)arg;
    if (kind == PYBOX_EVENT_STDOUT) {
        fwrite(data, 1, len, stdout);
        fflush(stdout);
    }
}

/* Run `code` in the session and print what it gave: 0, or 1 (with *err when the call failed). */
static int run(struct pybox_session *s, const char *code, struct pybox_error **err)
{
    struct pybox_exec *exec = pybox_exec_new();
    struct pybox_result *res = NULL;
    int rc = 1;

    if (exec == NULL || pybox_exec_set_code(exec, code, (size_t)-1) != PYBOX_OK ||
        pybox_exec_set_event_callback(exec, on_event, NULL) != PYBOX_OK)
        goto out;
    if (pybox_session_run(s, exec, &res, err) != PYBOX_OK)
        goto out;
    for (size_t i = 0; i < pybox_result_output_count(res); i++)
        printf("[%s] %s\n", pybox_result_output_type(res, i), pybox_result_output_text(res, i));
    printf("[call %llu] %s\n", (unsigned long long)pybox_result_execution_count(res),
           pybox_status_name(pybox_result_status(res)));
    rc = 0;
out:
    pybox_result_free(res);
    pybox_exec_free(exec);
    return rc;
}

int main(void)
{
    struct pybox_client *client = NULL;
    struct pybox_session *session = NULL;
    struct pybox_error *err = NULL;
    void *data = NULL;
    size_t size = 0;
    int status = 1;

    if (pybox_client_new_from_env(&client, &err) != PYBOX_OK ||
        pybox_session_open(client, NULL, &session, &err) != PYBOX_OK)
        goto out;
    if (run(session, "total = 0\nfor i in range(3):\n    total += i\n    print(i)", &err) != 0 ||
        run(session, "open('total.txt', 'w').write(str(total * 7))\ntotal * 7", &err) != 0)
        goto out;
    if (pybox_session_get_file(session, "total.txt", &data, &size, &err) != PYBOX_OK)
        goto out;
    printf("total.txt: %.*s\n", (int)size, (const char *)data);
    status = 0;
out:
    if (err != NULL)
        fprintf(stderr, "session: %s: %s\n", pybox_code_name(pybox_error_code(err)),
                pybox_error_message(err));
    pybox_error_free(err);
    pybox_free(data);
    pybox_session_close(session, NULL);
    pybox_client_free(client);
    return status;
}
