/* flowinspect CHECKPOINT: verifies a checkpoint (format, stored config, state,
 * naming rule, every dataset read through its Fletcher32 checksum) and prints its
 * format version, training state, stored config and dataset table with shapes
 * and L2 norms (distributed.md §2.8). Exit 0 if it verifies, 1 with one line
 * "flowinspect: <file>: <reason>" otherwise, 2 on bad usage. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "checkpoint.h"
#include "dist.h"

static void print_state(const struct train_state *st)
{
    printf("state:\n");
    for (size_t i = 0; i < ckpt_n_state_fields; i++) {
        const struct ckpt_field *f = &ckpt_state_fields[i];
        const char *p = (const char *)st + f->offset;
        uint64_t u;
        int32_t v;
        double d;
        printf("  %-20s ", f->name);
        switch (f->type) {
        case CKPT_U64:
            memcpy(&u, p, sizeof u);
            printf("%" PRIu64 "\n", u);
            break;
        case CKPT_I32:
            memcpy(&v, p, sizeof v);
            printf("%" PRId32 "\n", v);
            break;
        case CKPT_F64:
            memcpy(&d, p, sizeof d);
            printf("%.17g\n", d);
            break;
        }
    }
}

static void print_entries(const struct ckpt_info *info)
{
    size_t width = 8;
    for (size_t i = 0; i < info->n_entries; i++)
        if (strlen(info->entries[i].name) > width)
            width = strlen(info->entries[i].name);
    printf("datasets (%zu):\n  %-*s  %-8s  %-20s  %s\n", info->n_entries, (int)width, "name", "dtype",
           "shape", "L2 norm");
    for (size_t i = 0; i < info->n_entries; i++) {
        const struct ckpt_entry *e = &info->entries[i];
        char shape[96];
        size_t at = (size_t)snprintf(shape, sizeof shape, "[");
        for (int k = 0; k < e->ndim && at < sizeof shape; k++)
            at += (size_t)snprintf(shape + at, sizeof shape - at, "%s%" PRIu64, k ? "," : "", e->shape[k]);
        if (at < sizeof shape)
            snprintf(shape + at, sizeof shape - at, "]");
        printf("  %-*s  %-8s  %-20s  %.9g\n", (int)width, e->name, e->dtype, shape, e->l2);
    }
}

int main(int argc, char **argv)
{
    struct dist d;
    struct ckpt_info info;
    struct ft_err err = {{0}};
    int rc = 0;

    dist_init(&d, &argc, &argv);
    if (argc != 2 || argv[1][0] == '-') {
        if (d.rank == 0)
            fprintf(stderr, "usage: flowinspect CHECKPOINT\n"
                            "  verifies a flowtrain checkpoint and prints its state, config and tensors\n");
        dist_finalize();
        return 2;
    }
    if (d.rank == 0) {
        if (checkpoint_inspect(argv[1], &info, &err) != FT_OK) {
            fprintf(stderr, "flowinspect: %s\n", err.msg);
            rc = 1;
        } else {
            printf("file: %s\nformat: %s, version %" PRId64 "\n", argv[1], CHECKPOINT_FORMAT,
                   info.format_version);
            print_state(&info.state);
            printf("config (hash %016" PRIx64 "):\n%s", info.config_hash, info.config);
            if (info.config[0] && info.config[strlen(info.config) - 1] != '\n')
                putchar('\n');
            print_entries(&info);
            printf("verified: %zu datasets, Fletcher32 checksums good\n", info.n_entries);
            checkpoint_info_free(&info);
        }
    }
    dist_finalize();
    return rc;
}
