/* placeholder: being written */
#ifndef FACTORD_INFRA_PROJECTOR_H
#define FACTORD_INFRA_PROJECTOR_H
int es_projector_placeholder(void);
#endif
