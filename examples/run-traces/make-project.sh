#!/bin/sh
# Writes a small C project into DIR (N modules with a header, a main, a Makefile): `make -j2 -C DIR` builds it.
#   make-project.sh DIR [N=8]
# Recorded by benchmarks/realprograms.py (README.md, "Real programs").
set -eu
dir=$1; n=${2:-8}
mkdir -p "$dir"
: > "$dir/mods.h"
objs=""
i=0
while [ "$i" -lt "$n" ]; do
    echo "long mod$i(long x);" >> "$dir/mods.h"
    cat > "$dir/mod$i.c" <<EOC
#include <stdio.h>
#include <string.h>
#include "mods.h"
struct rec { long key; char name[24]; };
static struct rec table[64];
long mod$i(long x) {
    for (int j = 0; j < 64; j++) { table[j].key = x * j + $i; snprintf(table[j].name, sizeof table[j].name, "m$i-%d", j); }
    long s = 0;
    for (int j = 0; j < 64; j++) s += table[j].key ^ (long)strlen(table[j].name);
    return s;
}
EOC
    objs="$objs mod$i.o"
    i=$((i + 1))
done
{
    echo '#include <stdio.h>'
    echo '#include "mods.h"'
    echo 'int main(void) {'
    echo '    long s = 0;'
    i=0
    while [ "$i" -lt "$n" ]; do echo "    s += mod$i($i);"; i=$((i + 1)); done
    printf '    printf("%%ld\\n", s);\n'
    echo '    return 0;'
    echo '}'
} > "$dir/main.c"
cat > "$dir/Makefile" <<EOM
CFLAGS = -O2 -Wall
OBJS = main.o$objs
prog: \$(OBJS)
	\$(CC) -o \$@ \$(OBJS)
%.o: %.c mods.h
	\$(CC) \$(CFLAGS) -c -o \$@ \$<
clean:
	rm -f prog \$(OBJS)
EOM
