/* The text of etc/rules.yml, generated into build/gen at build time. */

#include "rules_default.h"

const char rules_default_yaml[] =
#include "rules_default.inc"
    ;
