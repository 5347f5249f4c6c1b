/* sink: consumer that read(2)s stdin into a 1 MiB buffer and discards it.
 * At EOF it writes one JSON line (to -o FILE, else stderr):
 *   bytes, t_total (s, process start -> EOF), t_first (s, start -> first byte),
 *   gibps (bytes / t_total / 2^30), mbps (bytes / t_total / 1e6),
 *   and with -w MS: per-window byte counts statistics over the windows that lie
 *   fully between first byte and EOF (first and last partial windows dropped):
 *   win_ms, win_n, win_min, win_med, win_max, win_mean, win_cv, max_over_min,
 *   steady_mbps (rate over the full windows only).
 * usage: sink [-w MS] [-s SKIP_MS] [-o FILE] [-b BUFSIZE]
 * -s: leave the windows that start in the first SKIP_MS after the first byte out of the
 *     window statistics (pverep: "after the first second").
 * (pverep copy of shared/perf/sink.c, with -s added)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int cmp(const void *a, const void *b) {
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int win_ms = 0, skip_ms = 0; const char *out = NULL; size_t bufsz = 1u << 20; int c;
    while ((c = getopt(argc, argv, "w:s:o:b:")) != -1) {
        if (c == 'w') win_ms = atoi(optarg);
        else if (c == 's') skip_ms = atoi(optarg);
        else if (c == 'o') out = optarg;
        else if (c == 'b') bufsz = (size_t)atol(optarg);
        else { fprintf(stderr, "usage: sink [-w MS] [-o FILE] [-b BUFSIZE]\n"); return 2; }
    }
    unsigned char *buf = aligned_alloc(4096, bufsz);
    memset(buf, 0, bufsz);
    size_t cap = 1 << 16, nwin = 0;
    unsigned long long *win = win_ms ? calloc(cap, sizeof *win) : NULL;
    double t0 = now(), tfirst = -1, tlast = t0, w = win_ms / 1000.0;
    unsigned long long bytes = 0;
    for (;;) {
        ssize_t n = read(0, buf, bufsz);
        if (n < 0) { if (errno == EINTR) continue; perror("sink: read"); return 1; }
        if (n == 0) break;
        double t = now();
        if (tfirst < 0) tfirst = t;
        bytes += (unsigned long long)n;
        if (win) {
            size_t i = (size_t)((t - tfirst) / w);
            while (i >= cap) { win = realloc(win, 2 * cap * sizeof *win); memset(win + cap, 0, cap * sizeof *win); cap *= 2; }
            win[i] += (unsigned long long)n;
            if (i + 1 > nwin) nwin = i + 1;
        }
    }
    tlast = now();
    FILE *f = out ? fopen(out, "w") : stderr;
    if (!f) { perror("sink: open"); return 1; }
    double tt = tlast - t0;
    fprintf(f, "{\"bytes\": %llu, \"t_total\": %.6f, \"t_first\": %.6f, \"gibps\": %.4f, \"mbps\": %.3f",
            bytes, tt, tfirst < 0 ? -1.0 : tfirst - t0, bytes / tt / 1073741824.0, bytes / tt / 1e6);
    if (win && nwin > 2) {
        /* full windows: 1 .. nwin-2 would drop the first; window 0 starts exactly at the
         * first byte so it is full; drop only the last (partial) window. */
        size_t first = (size_t)(skip_ms / win_ms);
        if (first > nwin - 2) first = nwin - 2;
        size_t n = nwin - 1 - first;
        unsigned long long *s = malloc(n * sizeof *s);
        memcpy(s, win + first, n * sizeof *s);
        double sum = 0, sq = 0;
        for (size_t i = 0; i < n; i++) { sum += s[i]; sq += (double)s[i] * s[i]; }
        double mean = sum / n, sd = sqrt(fmax(0, sq / n - mean * mean));
        qsort(s, n, sizeof *s, cmp);
        fprintf(f, ", \"win_ms\": %d, \"win_n\": %zu, \"win_min\": %llu, \"win_med\": %llu, \"win_max\": %llu, "
                   "\"win_mean\": %.0f, \"win_cv\": %.4f, \"max_over_min\": %.3f, \"steady_mbps\": %.3f",
                win_ms, n, s[0], s[n / 2], s[n - 1], mean, mean > 0 ? sd / mean : 0,
                s[0] ? (double)s[n - 1] / s[0] : -1.0, sum / (n * w) / 1e6);
        free(s);
    }
    fprintf(f, "}\n");
    if (out) fclose(f);
    return 0;
}
