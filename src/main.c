/* flowtrain: command line and wiring. With no arguments it reads ./flowtrain.yaml
 * if present, else the shipped defaults; --config/positional CONFIG and --set
 * override. Errors a user can cause are agreed across ranks, printed once by
 * rank 0, and every rank exits 1 (distributed.md §1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dist.h"
#include "glow.h"
#include "train.h"

#define MAX_SETS 256

static void usage(FILE *f)
{
    fprintf(f,
        "usage: flowtrain [CONFIG] [--config FILE] [--set key=value]... [options]\n"
        "\n"
        "Trains a Glow normalizing flow on HDF5 images, data-parallel over MPI ranks\n"
        "(mpirun -np N flowtrain ...). Without CONFIG it reads ./flowtrain.yaml if present,\n"
        "else the shipped defaults (%s).\n"
        "\n"
        "  --config FILE      YAML config applied over the defaults\n"
        "  --set key=value    override one field, e.g. --set train.lr=5e-4 (repeatable)\n"
        "  --defaults FILE    the base config (default: %s)\n"
        "  --resume WHAT      auto (default): the newest valid checkpoint of run.dir, or a\n"
        "                     fresh start if there is none; none; or a checkpoint file\n"
        "  --print-config     print the resolved config and exit\n"
        "  --print-params     print the parameter table and count and exit\n"
        "  -h, --help         this text\n"
        "\n"
        "Exit status: 0 done, 1 config/data/checkpoint error, 3 failed check or watchdog,\n"
        "4 non-finite steps, 98 stopped by SIGTERM, 99 stopped by SIGUSR1 (requeue wanted);\n"
        "98 and 99 come after a committed checkpoint.\n",
        FT_DEFAULT_CONFIG, FT_DEFAULT_CONFIG);
}

struct args {
    const char *config, *defaults, *resume;
    const char *sets[MAX_SETS];
    size_t n_sets;
    int print_config, print_params, help;
};

static int parse_args(struct args *a, int argc, char **argv, struct ft_err *err)
{
    memset(a, 0, sizeof *a);
    a->defaults = FT_DEFAULT_CONFIG;
    a->resume = "auto";
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(s, "--config") || !strcmp(s, "--set") || !strcmp(s, "--defaults")
            || !strcmp(s, "--resume")) {
            if (!has_val) {
                ft_err_set(err, "%s needs a value (see --help)", s);
                return FT_ERR_CONFIG;
            }
            const char *v = argv[++i];
            if (!strcmp(s, "--config"))
                a->config = v;
            else if (!strcmp(s, "--defaults"))
                a->defaults = v;
            else if (!strcmp(s, "--resume"))
                a->resume = v;
            else if (a->n_sets == MAX_SETS) {
                ft_err_set(err, "more than %d --set options", MAX_SETS);
                return FT_ERR_CONFIG;
            } else
                a->sets[a->n_sets++] = v;
        } else if (!strcmp(s, "--print-config")) {
            a->print_config = 1;
        } else if (!strcmp(s, "--print-params")) {
            a->print_params = 1;
        } else if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            a->help = 1;
        } else if (s[0] != '-' && !a->config) {
            a->config = s;
        } else {
            ft_err_set(err, "unknown argument '%s' (see --help)", s);
            return FT_ERR_CONFIG;
        }
    }
    if (!a->config && access("flowtrain.yaml", R_OK) == 0)
        a->config = "flowtrain.yaml";
    return FT_OK;
}

static int print_params(const struct config *cfg, struct ft_err *err)
{
    struct glow_spec spec;
    struct glow g;
    config_glow_spec(cfg, &spec);
    int rc = glow_init(&g, &spec, 1, 1, err);
    if (rc != FT_OK)
        return rc;
    size_t bufs = 0;
    printf("%-48s %-18s %12s\n", "tensor", "shape", "elements");
    for (size_t i = 0; i < g.n_tensors; i++) {
        const struct glow_tensor *t = &g.tensors[i];
        char shape[64] = "[";
        for (int d = 0; d < t->ndim; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%d",
                     d ? "," : "", t->shape[d]);
        strcat(shape, "]");
        printf("%-48s %-18s %12zu%s\n", t->name, shape, t->numel,
               t->kind == TENSOR_PARAM ? "" : "  (buffer)");
        if (t->kind != TENSOR_PARAM)
            bufs += t->numel;
    }
    printf("total trainable parameters: %zu (glow-model.md §12 count), buffers: %zu\n",
           glow_param_count(&spec), bufs);
    glow_free(&g);
    return FT_OK;
}

int main(int argc, char **argv)
{
    struct dist d;
    struct args a;
    struct config cfg;
    struct ft_err err = { "" };
    dist_init(&d, &argc, &argv);
    int rc = parse_args(&a, argc, argv, &err);
    if (rc == FT_OK && a.help) {
        if (d.rank == 0)
            usage(stdout);
        dist_finalize();
        return 0;
    }
    if (rc == FT_OK)
        rc = config_load(&cfg, a.defaults, a.config, a.sets, a.n_sets, &err);
    if (dist_agree_error(rc != FT_OK, err.msg)) {
        dist_finalize();
        return FT_EXIT_USER;
    }
    if (a.print_config || a.print_params) {
        rc = FT_OK;
        if (d.rank == 0)
            rc = a.print_config ? config_dump(&cfg, stdout) : print_params(&cfg, &err);
        int bad = dist_agree_error(rc != FT_OK, err.msg);
        dist_finalize();
        return bad ? FT_EXIT_USER : FT_EXIT_OK;
    }
    if (d.rank == 0) {
        printf("flowtrain: %d rank%s, config %s\n", d.size, d.size > 1 ? "s" : "",
               a.config ? a.config : a.defaults);
        config_dump(&cfg, stdout);
        fflush(stdout);
    }
    trainer_install_signals();
    struct trainer t;
    rc = trainer_init(&t, &cfg, &d, a.resume, &err);
    if (dist_agree_error(rc != FT_OK, err.msg)) {
        trainer_free(&t);
        dist_finalize();
        return FT_EXIT_USER;
    }
    rc = trainer_run(&t);
    trainer_free(&t);
    dist_finalize();
    return rc;
}
