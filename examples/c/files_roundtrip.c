/*
 * files_roundtrip: send a file into the sandbox, let the script write
 * another one, and get it back.
 */
#include <stdio.h>
#include <string.h>

#include <pybox/pybox.h>

static const char script[] = "lines = open('notes.txt').read().splitlines()\n"
                             "words = sum(len(l.split()) for l in lines)\n"
                             "with open('report.txt', 'w') as f:\n"
                             "    f.write(f'{len(lines)} lines, {words} words in total\\n')\n";

static const char notes[] = "first\n\nsecond line\n";

int main(void)
{
    struct pybox_client *client = NULL;
    struct pybox_exec *exec = pybox_exec_new();
    struct pybox_result *res = NULL;
    struct pybox_error *err = NULL;
    const char *data;
    size_t size = 0;
    long i;
    int status = 1;

    if (exec == NULL || pybox_client_new_from_env(&client, &err) != PYBOX_OK)
        goto out;
    if (pybox_exec_set_code(exec, script, sizeof(script) - 1) != PYBOX_OK ||
        pybox_exec_add_file(exec, "notes.txt", notes, strlen(notes)) != PYBOX_OK ||
        pybox_exec_add_return(exec, "report.txt") != PYBOX_OK)
        goto out;
    if (pybox_run(client, exec, &res, &err) != PYBOX_OK)
        goto out;
    if (pybox_result_status(res) != PYBOX_STATUS_OK) {
        fprintf(stderr, "the script failed:\n%s", pybox_result_stderr(res, NULL));
        goto out;
    }
    i = pybox_result_file_find(res, "report.txt");
    data = i < 0 ? NULL : pybox_result_file_data(res, (size_t)i, &size);
    if (data == NULL) {
        fprintf(stderr, "report.txt: %s\n",
                i < 0 ? "not returned" : pybox_result_file_error(res, (size_t)i));
        goto out;
    }
    printf("report.txt: %.*s", (int)size, data);
    status = 0;
out:
    if (err != NULL)
        fprintf(stderr, "files_roundtrip: %s\n", pybox_error_message(err));
    pybox_error_free(err);
    pybox_result_free(res);
    pybox_exec_free(exec);
    pybox_client_free(client);
    return status;
}
