/* flowtrain command line (placeholder until the config module lands). */
#include <stdio.h>
int main(void)
{
    return 0;
}
