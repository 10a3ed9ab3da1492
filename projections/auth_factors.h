/* placeholder: being written */
#ifndef FACTORD_PROJECTIONS_AUTH_FACTORS_H
#define FACTORD_PROJECTIONS_AUTH_FACTORS_H
int proj_auth_factors_placeholder(void);
#endif
