/* placeholder: being written */
#include "projections/auth_factors.h"
int proj_auth_factors_placeholder(void) { return 0; }
