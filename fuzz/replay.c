/*
 * Replay driver: runs a libFuzzer target over every file of a corpus
 * directory (or over the files named), so the committed corpus is a ctest case
 * in builds without libFuzzer.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rbe");
    uint8_t *data = NULL;
    size_t len = 0;
    size_t alloc = 0;
    size_t n;

    if (f == NULL) {
        perror(path);
        return -1;
    }
    do {
        if (len == alloc) {
            alloc = alloc ? alloc * 2 : 4096;
            data = realloc(data, alloc);
            if (data == NULL)
                abort();
        }
        n = fread(data + len, 1, alloc - len, f);
        len += n;
    } while (n > 0);
    fclose(f);
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0;

    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        struct dirent *de;

        if (d == NULL) {
            if (run_file(argv[i]) < 0)
                return 1;
            files++;
            continue;
        }
        while ((de = readdir(d)) != NULL) {
            char path[4096];

            if (de->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
            if (run_file(path) < 0) {
                closedir(d);
                return 1;
            }
            files++;
        }
        closedir(d);
    }
    printf("replayed %d inputs\n", files);
    return files > 0 ? 0 : 1;
}
