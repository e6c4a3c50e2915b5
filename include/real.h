/* The scalar type of the numeric kernels. float32 for training; the test build
 * of the same sources (FT_REAL_DOUBLE) runs them in float64 so that central
 * differences and brute-force Jacobians can check them (glow-model.md §13). */
#ifndef FT_REAL_H
#define FT_REAL_H

#include <math.h>

#ifdef FT_REAL_DOUBLE
typedef double ft_real;
#define FT_REAL_NAME "float64"
#else
typedef float ft_real;
#define FT_REAL_NAME "float32"
#endif

/* The neighbouring ft_real of x, up or down. */
static inline ft_real ft_real_step(ft_real x, int up)
{
#ifdef FT_REAL_DOUBLE
    return nextafter(x, up ? INFINITY : -INFINITY);
#else
    return nextafterf(x, up ? INFINITY : -INFINITY);
#endif
}

#endif
