/*
 * main_mode: call the script's main() and read what it returned as JSON.
 */
#include <stdio.h>

#include <pybox/pybox.h>

static const char script[] = "import statistics\n"
                             "\n"
                             "def main():\n"
                             "    data = [1, 2, 3, 4]\n"
                             "    return {'n': len(data), 'mean': statistics.mean(data)}\n";

int main(void)
{
    struct pybox_client *client = NULL;
    struct pybox_exec *exec = pybox_exec_new();
    struct pybox_result *res = NULL;
    struct pybox_error *err = NULL;
    int status = 1;

    if (exec == NULL || pybox_client_new_from_env(&client, &err) != PYBOX_OK)
        goto out;
    if (pybox_exec_set_code(exec, script, sizeof(script) - 1) != PYBOX_OK ||
        pybox_exec_set_main(exec, true) != PYBOX_OK)
        goto out;
    if (pybox_run(client, exec, &res, &err) != PYBOX_OK)
        goto out;
    if (pybox_result_status(res) != PYBOX_STATUS_OK) {
        fprintf(stderr, "main() failed: %s: %s\n", pybox_result_error_type(res),
                pybox_result_error_message(res));
        goto out;
    }
    printf("main() returned %s\n", pybox_result_json(res));
    status = 0;
out:
    if (err != NULL)
        fprintf(stderr, "main_mode: %s\n", pybox_error_message(err));
    pybox_error_free(err);
    pybox_result_free(res);
    pybox_exec_free(exec);
    pybox_client_free(client);
    return status;
}
