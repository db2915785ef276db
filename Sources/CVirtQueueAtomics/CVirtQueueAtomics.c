#include "CVirtQueueAtomics.h"
