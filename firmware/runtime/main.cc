#include "tinyexit/platform.h"
#include "tinyexit/protocol.h"

int main(int argc, char** argv) {
  tx::platform::init(argc, argv);
  tx::protocol::serve();
  tx::platform::exit(0);
}
