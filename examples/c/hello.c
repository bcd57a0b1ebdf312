/*
 * hello: the smallest libpybox program.  Local mode unless PYBOX_SERVER names
 * a pybox server; the code does not change.
 *
 *     cc hello.c $(pkg-config --cflags --libs libpybox) && ./a.out
 */
#include <stdio.h>

#include <pybox/pybox.h>

int main(void)
{
    struct pybox_client *client = NULL;
    struct pybox_exec *exec = NULL;
    struct pybox_result *res = NULL;
    struct pybox_error *err = NULL;
    int status = 1;

    if (pybox_client_new_from_env(&client, &err) != PYBOX_OK)
        goto out;
    exec = pybox_exec_new();
    if (exec == NULL || pybox_exec_set_code(exec, "print('Hello from pybox')\nprint(6 * 7)",
                                            (size_t)-1) != PYBOX_OK)
        goto out;
    if (pybox_run(client, exec, &res, &err) != PYBOX_OK)
        goto out;
    /* Whatever the script did, it ran: its status, output and exit code tell the rest. */
    fputs(pybox_result_stdout(res, NULL), stdout);
    fputs(pybox_result_stderr(res, NULL), stderr);
    status = pybox_result_status(res) == PYBOX_STATUS_OK ? 0 : 1;
out:
    if (err != NULL)
        fprintf(stderr, "hello: %s: %s\n", pybox_code_name(pybox_error_code(err)),
                pybox_error_message(err));
    pybox_error_free(err);
    pybox_result_free(res);
    pybox_exec_free(exec);
    pybox_client_free(client);
    return status;
}
