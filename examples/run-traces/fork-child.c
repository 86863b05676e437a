/* Writes N pages of a 2 MiB-aligned private anonymous area, forks; the child writes M of them and exits;
 * the parent waits and writes K. Recorded: foliosim trace --thp 64K=always --check-live -o fork-child.trace.gz
 * -- ./fork-child 64 16 32 (see README.md, "Simulate what a real program did"). */
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 64, m = argc > 2 ? atoi(argv[2]) : 16, k = argc > 3 ? atoi(argv[3]) : 32;
    size_t sz = (size_t)n * 4096;
    char *p = mmap(0, sz + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p = (char *)(((unsigned long)p + (2 << 20) - 1) & ~((2UL << 20) - 1));
    for (int i = 0; i < n; i++) p[(size_t)i * 4096] = 1;
    pid_t c = fork();
    if (c == 0) {
        for (int i = 0; i < m; i++) p[(size_t)i * 4096] = 2;
        _exit(0);
    }
    waitpid(c, 0, 0);
    for (int i = 0; i < k; i++) p[(size_t)i * 4096] = 3;
    return 0;
}
